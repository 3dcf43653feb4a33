"""The one naming rule for users and projects.

A lowercase DNS label that starts with a letter: it is safe in URLs, hostnames, file paths and
as a Unix user name, which later backends map users to. The API enforces it through the
`Name` field type (suanli.schemas.types) and states it in the OpenAPI document.
"""

NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
