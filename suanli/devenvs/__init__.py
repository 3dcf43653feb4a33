"""Dev environments, the node's side: the agent that a dev environment runs as its command.

It starts the tools asked for (JupyterLab, a web terminal, code-server, an SSH server) on
free ports of its node and writes where they listen to a file in the environment's
directory (`endpoints.json`), as Open OnDemand does. The server reads that file to reach
them through its proxy (suanli.web.proxy) and its SSH gateway (suanli.gateway); nothing but
the server knows their token. Nothing here imports the server's modules.
"""
