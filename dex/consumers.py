"""Platform-level WebSocket endpoint.

``/ws/system/`` answers ``{"type": "ping"}`` with ``{"type": "pong", "server_time": …}``
so a client can check its connection and measure round-trip time and clock skew
before it subscribes to anything. Any other message — binary frames included — closes the
socket with 4400.
"""

from datetime import UTC, datetime

from channels.generic.websocket import AsyncJsonWebsocketConsumer

CLOSE_BAD_MESSAGE = 4400


class SystemConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if text_data is None:  # a binary frame, which the JSON consumer would raise on
            await self._refuse()
            return
        await super().receive(text_data=text_data, **kwargs)

    async def receive_json(self, content, **kwargs) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json(
                {
                    "type": "pong",
                    "id": content.get("id"),
                    "server_time": datetime.now(tz=UTC).isoformat(timespec="microseconds"),
                }
            )
            return
        await self._refuse()

    async def _refuse(self) -> None:
        await self.send_json({"type": "error", "code": "UNKNOWN_MESSAGE"})
        await self.close(code=CLOSE_BAD_MESSAGE)

    @classmethod
    async def decode_json(cls, text_data: str):
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None
