"""Stand-ins for what the portal talks to in the field (Microsoft's download service, a fleet of endpoints), for tests, benchmarks and the demo; never imported by core, mirror or fleet."""
