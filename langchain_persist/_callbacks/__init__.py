"""Recording runs: the LangChain callback handler, the background writer that stores its
events, shutdown and fork hooks, and the execution tracker built on both."""
