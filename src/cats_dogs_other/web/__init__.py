"""The web page at `/` and the API docs at `/docs` and `/redoc`: files shipped in the package, served by
the service itself with a strict CSP."""

from cats_dogs_other.web.docs import install_docs
from cats_dogs_other.web.page import install_page, page_headers

__all__ = ["install_docs", "install_page", "page_headers"]
