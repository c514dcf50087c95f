"""The web page at `/`: files shipped in the package, served by the service itself with a strict CSP."""

from cats_dogs_other.web.page import install_page, page_headers

__all__ = ["install_page", "page_headers"]
