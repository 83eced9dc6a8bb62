"""Actors outside the program (robots attached with `python -m launch.attach`).

Robot side, run by the attach process (`attach`, its command line and control loop):
* `link`: `ProgramLink` finds the program (its address book, re-read on every
  reconnect, or fixed addresses) and checks that a program it reconnects to still
  has the spec the robot was attached with; `ParameterFetcher` keeps the newest
  policy in `LatestParameters`, the local variable source the robot's actor reads,
  so acting never waits on the network;
* `outbox`: `EpisodeOutbox` keeps every validated episode on the robot PC's disk,
  with a ledger of what has been delivered;
* `sender`: `Sender` delivers the outbox in order, with retries and exponential
  backoff: the episode to the program's store, and its n-step transitions to the
  external replay table.

Program side: `sink.ExternalEpisodeSink`, which the learner serves over Courier,
appends whole episodes from attached actors to the run's durable store, each exactly once.

Both sides: `spec` (the environment spec as plain data, and the comparison that names
every differing field) and `wire` (episodes as plain data, and the checks the program
makes before storing one).
"""
