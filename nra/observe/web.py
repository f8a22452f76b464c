"""The part of aiohttp's server that nra's HTTP server uses, from the modules that define it.

`from aiohttp import web` runs aiohttp's __init__, which loads the HTTP client too, and the
client's connector builds two TLS contexts with the system's CA certificates at import
(~2 MB, and most of aiohttp's import time): a static-file agent never makes a request. With
nra.lazy_imports installed (the CLI does), these imports load the server's modules only.
"""

from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse
from aiohttp.web_server import Server

__all__ = ["BaseRequest", "Response", "Server", "StreamResponse"]
