"""A small stand-in for the PMS's internal services, for `docker compose up` (compose.yaml).

One aiohttp server answers every upstream of demo/routes.yaml: reservations (JSON, kept in
memory; server-sent events), guests, rooms (`/inventory/...`, a WebSocket feed), rates,
invoices (a PDF-ish answer) and `/hook`, where webhook deliveries can be sent. Not for
production: it forgets everything when it stops.

    python demo/pms.py [PORT]        # default 9000, on every address
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from aiohttp import WSMsgType, web

DEFAULT_PORT = 9000
EVENTS_SENT = 3  # server-sent events per /reservations/{id}/events stream
EVENT_GAP = 0.2  # seconds between two of them

STORE = web.AppKey("store", dict)


def _reservation(reservation_id: str, body: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "id": reservation_id,
        "status": "confirmed",
        "guest": {"id": str(uuid.uuid4()), "email": "ada@example.com", "first_name": "Ada"},
        "rooms": [{"room_id": "412", "rate_plan": "BAR"}],
        **(body or {}),
    }


async def create_reservation(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    if not isinstance(body, dict):
        return web.json_response({"code": "bad_body", "message": "a JSON object"}, status=400)
    item = _reservation(str(uuid.uuid4()), body)
    request.app[STORE][item["id"]] = item
    return web.json_response(item, status=201)


async def list_reservations(request: web.Request) -> web.Response:
    return web.json_response({"items": list(request.app[STORE].values())})


async def reservation(request: web.Request) -> web.Response:
    rid = request.match_info["rid"]
    store = request.app[STORE]
    if request.method == "DELETE":
        store.pop(rid, None)
        return web.Response(status=204)
    if request.method in ("PUT", "PATCH"):
        body = await request.json()
        store[rid] = {**store.get(rid, _reservation(rid)), **body, "id": rid}
    return web.json_response(store.get(rid) or _reservation(rid))


async def reservation_events(request: web.Request) -> web.StreamResponse:
    answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await answer.prepare(request)
    for n in range(EVENTS_SENT):
        await answer.write(f"id: {n}\nevent: status\ndata: confirmed\n\n".encode())
        await asyncio.sleep(EVENT_GAP)
    await answer.write_eof()
    return answer


async def echo(request: web.Request) -> web.Response:
    """Guests, rooms, rates: the path and, for writes, the body sent."""
    body = await request.json() if request.can_read_body else None
    return web.json_response({"path": request.path, "method": request.method, "body": body})


async def room_feed(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({"room_id": "412", "status": "clean"})
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def invoice_pdf(request: web.Request) -> web.Response:
    return web.Response(body=b"%PDF-1.4\n% demo invoice\n", content_type="application/pdf")


async def hook(request: web.Request) -> web.Response:
    print("webhook received:", request.headers.get("webhook-id"), await request.text(), flush=True)
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app[STORE] = {}
    r = app.router
    r.add_get("/health", health)
    r.add_post("/reservations", create_reservation)
    r.add_get("/reservations", list_reservations)
    r.add_get("/reservations/{rid}/events", reservation_events)
    r.add_route("*", "/reservations/{rid}", reservation)
    r.add_get("/inventory/rooms/feed", room_feed)
    r.add_get("/invoices/{iid}/pdf", invoice_pdf)
    r.add_post("/hook", hook)
    r.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PORT
    web.run_app(make_app(), host="0.0.0.0", port=port, access_log=None)


if __name__ == "__main__":
    main()
