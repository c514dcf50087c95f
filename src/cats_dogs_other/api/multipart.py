"""Reading image files out of a multipart/form-data body, with a clear 4xx for every malformed one."""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

MAX_FORM_FIELDS = 16


def _multipart_is_complete(request: Request) -> bool:
    """Whether the body ended with its closing delimiter: python-multipart drops a truncated last part
    silently, so this is how a truncated upload is told from one that lacks the expected part."""
    boundary = (
        request.headers.get("content-type", "").partition("boundary=")[2].split(";")[0].strip().strip('"')
    )
    tail: bytes = request.scope.get("state", {}).get("body_tail", b"")
    return bool(boundary) and tail.rstrip(b"\r\n").endswith(b"--" + boundary.encode() + b"--")


async def read_file_parts(request: Request, field: str, max_files: int) -> list[tuple[str | None, bytes]]:
    """The files sent under `field` (name and bytes), read only after authentication and admission."""
    files, _ = await read_form(request, field, max_files)
    return files


async def read_form(
    request: Request, field: str, max_files: int, text_fields: tuple[str, ...] = ()
) -> tuple[list[tuple[str | None, bytes]], dict[str, str]]:
    """`read_file_parts`, and the text parts named in `text_fields` (the last of each name; a file sent
    where text is expected is a 422)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        shown = content_type.split(";")[0].strip() or "no Content-Type"
        raise HTTPException(
            415, f"Expected multipart/form-data with the image in a part named '{field}', got {shown}."
        )
    form = await request.form(max_files=max_files, max_fields=MAX_FORM_FIELDS)
    try:
        values = form.getlist(field)
        files = [value for value in values if isinstance(value, UploadFile)]
        if not files:
            if not _multipart_is_complete(request):
                raise HTTPException(
                    400,
                    "The multipart body is incomplete: it is truncated, or its boundary does not match "
                    "the one in Content-Type.",
                )
            if values:
                raise HTTPException(
                    422, f"The part '{field}' is a text field; send the image as a file part."
                )
            sent = ", ".join(sorted({f"'{name}'" for name in form})) or "none"
            raise HTTPException(
                422,
                f"Missing form part '{field}' (parts sent: {sent}). "
                f"Send the image as a multipart file part named '{field}'.",
            )
        texts: dict[str, str] = {}
        for name in text_fields:
            value = form.get(name)
            if isinstance(value, UploadFile):
                raise HTTPException(422, f"The part '{name}' must be a text field, not a file.")
            if value is not None:
                texts[name] = value
        return [(upload.filename, await upload.read()) for upload in files], texts
    finally:
        await form.close()
