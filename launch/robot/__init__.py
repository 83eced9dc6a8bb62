"""Actors outside the program (robots attached with `python -m launch.attach`).

Robots reach the program through one door, the robot gateway: gRPC carrying frames of
plain data (JSON and raw arrays with declared dtype and shape; never a pickle), each call
with the run's token.

Robot side, run by the attach process (`attach`, its command line and control loop):
* `link`: `ProgramLink` finds the gateway (the address book, re-read on every reconnect,
  or a fixed address) and checks that a program it reconnects to still has the spec the
  robot was attached with; `GatewayClient` makes the calls; `ParameterFetcher` keeps the
  newest policy in `LatestParameters`, the local variable source the robot's actor reads,
  so acting never waits on the network;
* `outbox`: `EpisodeOutbox` keeps every validated episode on the robot PC's disk,
  with a ledger of what has been delivered;
* `sender`: `Sender` delivers the outbox in order, with retries and exponential
  backoff, to the program's store.

Program side: `gateway` (the server: token check, the methods, the replay inserts; the
node that runs it is launch.nodes.gateway) and `sink.ExternalEpisodeSink`, which appends
whole episodes from attached actors to the run's durable store, each exactly once.

Both sides: `frame` (the wire format), `protocol` (methods, token, messages), `spec` (the
environment spec as plain data, and the comparison that names every differing field) and
`wire` (episodes as plain data, and the checks the program makes before storing one).
"""
