"""A WebSocket client for the interception tests: text, binary, a fragmented message, a large
message, ping/pong and the close handshake, against the lab's echo server. Prints one JSON line
with what came back; exits non-zero on any mismatch."""
import asyncio
import json
import sys

import websockets


async def main(url):
    out = {}
    async with websockets.connect(url, max_size=1 << 24, compression="deflate") as ws:
        await ws.send("hello, flowdog")
        out["text"] = await ws.recv() == "hello, flowdog"
        blob = bytes(range(256)) * 16
        await ws.send(blob)
        out["binary"] = await ws.recv() == blob
        # An iterable of strings is sent as one message in as many fragments.
        await ws.send(["frag", "ment", "ed"])
        out["fragmented"] = await ws.recv() == "fragmented"
        big = bytes(i % 251 for i in range(1 << 20))
        await ws.send(big)
        out["large"] = await ws.recv() == big
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        out["pong"] = True
    out["close_code"] = ws.close_code
    print(json.dumps(out))
    ok = all(v is True for k, v in out.items() if k != "close_code") and out["close_code"] == 1000
    sys.exit(0 if ok else 1)


asyncio.run(main(sys.argv[1]))
