"""A plain TCP service for the tests: listens on $PORT (on $HOST) and answers each line in
upper case. Stands for a gRPC or any other non-HTTP server a user deploys."""

import asyncio
import os


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line.upper())
        await writer.drain()
    writer.close()


async def main() -> None:
    server = await asyncio.start_server(
        answer, os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
