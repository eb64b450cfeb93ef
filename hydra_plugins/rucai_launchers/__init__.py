"""Hydra instantiates launchers only from classes defined in the `hydra_plugins` namespace.

The implementation lives in `rucai.launchers`; these subclasses give it the names Hydra accepts.
"""

from rucai import launchers as _impl


class SlurmLauncher(_impl.SlurmLauncher):
    pass


class LocalLauncher(_impl.LocalLauncher):
    pass
