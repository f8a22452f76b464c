"""The test bed: throwaway network namespaces and the BIRD lab, shared by the tests, the
benchmarks and `scripts/lab`. Standard library only (the lab runs with any python3); not
part of the nra package that ships."""
