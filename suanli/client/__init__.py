"""The Suanli Python SDK: a typed client of the public REST API.

from suanli.client import Client
with Client("http://127.0.0.1:8686") as client:
    client.login("admin", "...")
    client.projects.create("vision")
    client.projects.set_quota("vision", guaranteed_gpus=2, max_gpus=4)
"""

from suanli.client.client import ApiError, Client

__all__ = ["ApiError", "Client"]
