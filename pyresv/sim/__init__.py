"""The storage-controller model on SimPy (DESIGN.md section 2).

``config`` reads and checks a TOML config; ``topology`` holds the controller's
plain data (clusters, volumes, relationships) and FIGs 2A/2B initialization;
``process`` the simulated processes; ``engine`` the run itself (``run``,
``Simulation``, ``RunResult``); ``flashcopy`` the FlashCopy flows; ``faults``
the injected failures; ``deadlock`` the wait-for graph; ``metrics`` the
recorded timelines; ``scenarios`` the patent's named examples.

Imports run one way: this layer uses the allocator layer (``pyresv``,
``pyresv.reference``, ``pyresv.errors``) and nothing above it.
"""
