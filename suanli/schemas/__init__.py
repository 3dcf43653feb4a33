"""Transport schemas of the public API, shared by the server and the SDK.

They depend on pydantic alone, so the SDK can use them without the server's dependencies.
Request bodies reject unknown fields; every string is checked to be storable text.
"""
