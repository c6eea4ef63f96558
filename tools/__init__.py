"""Development tools: test bootstrap, Redis for test runs, the demo app. Not installed."""
