"""The tools around the model: the command line (``cli``), parameter sweeps on
Dask (``sweep``), the sizing search (``sizing``), reports and plots
(``report``, ``plots``) and the exhaustive model check (``modelcheck``).

The top layer: it may import everything below it (``pyresv.sim``,
``pyresv.adapters``, the allocator layer) and nothing imports it.
"""
