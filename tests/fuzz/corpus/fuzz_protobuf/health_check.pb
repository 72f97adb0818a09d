
agentz.v1.AgentService