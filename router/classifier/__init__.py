"""Classification on one shared MiniLM encoder pass: domain, jailbreak, PII and operator example heads."""
