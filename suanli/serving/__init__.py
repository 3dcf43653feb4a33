"""Model services at run time: the gateway (`/v1`, OpenAI's API, and the proxy of services
that are not OpenAI-shaped), its routing table, metering and limits, the readiness probe
and the autoscaler. What users deploy and manage is in suanli.services.serving."""
