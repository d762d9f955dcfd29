"""A real upstream PMS service for tests: echo, bytes, uploads, slow, SSE, WebSocket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid

from aiohttp import WSMsgType, web


def pattern(n: int) -> bytes:
    """Deterministic non-UTF-8 bytes of length n."""
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_b64": base64.b64encode(body).decode(),
        },
        headers={"X-Upstream": "echo"},
    )


async def json_answer(request: web.Request) -> web.Response:
    resp = web.json_response(
        {
            "reservation": {"id": "R-1", "guest": "Ada", "card_number": "4111111111111111"},
            "token": "t0ps3cret",
            "items": [{"password": "p"}],
        },
        status=201,
    )
    resp.headers.add("Set-Cookie", "a=1")
    resp.headers.add("Set-Cookie", "b=2")
    return resp


async def bytes_answer(request: web.Request) -> web.StreamResponse:
    n = int(request.query.get("n", "1024"))
    data = pattern(n)
    if request.query.get("chunked"):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, n, 65536):
            await resp.write(data[i : i + 65536])
        await resp.write_eof()
        return resp
    return web.Response(body=data, content_type="application/octet-stream")


async def upload(request: web.Request) -> web.Response:
    h = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        h.update(chunk)
        size += len(chunk)
    return web.json_response(
        {
            "size": size,
            "sha256": h.hexdigest(),
            "chunked": request.headers.get("Transfer-Encoding") == "chunked",
        }
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "5")))
    return web.json_response({"slow": True})


async def status(request: web.Request) -> web.Response:
    return web.json_response(
        {"status": int(request.match_info["code"])}, status=int(request.match_info["code"])
    )


async def sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    for i in range(3):
        await resp.write(f'id: {i}\nevent: room.status\ndata: {{"n": {i}}}\n\n'.encode())
        await asyncio.sleep(0.05)
    await resp.write_eof()
    return resp


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("pms.v1",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            if msg.data == "close":
                await ws.close(code=4001, message=b"bye")
                break
            await ws.send_str("echo:" + msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


WS_RECEIVED: list[str | bytes] = []  # every message websocket_json got, for the tests


async def websocket_json(request: web.Request) -> web.WebSocketResponse:
    """Answers each JSON message with what arrived: the raw text, the path and its guest_id."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            WS_RECEIVED.append(msg.data)
        if msg.type == WSMsgType.TEXT:
            got = json.loads(msg.data)
            await ws.send_json(
                {"seen": msg.data, "path": request.rel_url.raw_path, "guest_id": got["guest_id"]}
            )
    return ws


async def text_answer(request: web.Request) -> web.Response:
    return web.Response(text="plain ünïcode text", content_type="text/plain")


async def mirror(request: web.Request) -> web.Response:
    """What arrived (raw path, query, JSON body), as JSON: ids sent in come back out."""
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = {"not_json": raw.decode("utf-8", "replace")}
    status = int(request.query.get("status", "200"))
    return web.json_response(
        {"raw_path": request.rel_url.raw_path, "query": request.query_string, "body": body},
        status=status,
    )


async def create_reservation(request: web.Request) -> web.Response:
    """A create: answers 201 with a fresh internal id (and the guest it was given)."""
    body = await request.json()
    new_id = request.query.get("id") or str(uuid.uuid4())
    return web.json_response({"id": new_id, "guest_id": body.get("guest_id")}, status=201)


async def chunked_json(request: web.Request) -> web.StreamResponse:
    """A JSON answer of unknown length (chunked) naming the internal id given in ?id=."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(b'{"reservation": {"id": "')
    await resp.write(request.query["id"].encode() + b'"}}')
    await resp.write_eof()
    return resp


def make_upstream_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_get("/json", json_answer)
    app.router.add_post("/json", json_answer)
    app.router.add_get("/bytes", bytes_answer)
    app.router.add_post("/upload", upload)
    app.router.add_get("/slow", slow)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/ws-json/{rid}", websocket_json)
    app.router.add_get("/text", text_answer)
    app.router.add_route("*", "/mirror/{tail:.*}", mirror)
    app.router.add_post("/create", create_reservation)
    app.router.add_get("/chunked-json", chunked_json)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_route("*", "/readonly", echo)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
