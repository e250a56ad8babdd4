"""exceedance's Hydra configs, shipped in the package as `exceedance.conf` (Hydra: `pkg://exceedance.conf`).

`sweeps` here is a link to the top-level `sweeps/` folder: Hydra finds a config group only as a
folder under a search-path root, and this makes the named sweeps the group `+sweeps=NAME` in a
clone and in an installed wheel alike, with one copy of each file.
"""
