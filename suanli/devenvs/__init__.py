"""Dev environments: what runs on the node (the agent) and what the server puts in front of it
(the authenticated reverse proxy and the SSH gateway).

A dev environment is a workload like a job; its command is the agent
(`python -m suanli.devenvs.agent`), which starts the tools asked for (JupyterLab, a web
terminal, code-server, an SSH server) on free ports of its node and writes where they listen
to a file in the environment's directory (`endpoints.json`), as Open OnDemand does. The
server reads that file to reach them; nothing but the server knows their tokens.
"""
