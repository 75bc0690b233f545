"""The multi-node lab: hosts in Linux network namespaces, veth links, NAT gateways."""

from whalescale.lab.errors import LabError
from whalescale.lab.lab import Lab, lab_available
from whalescale.lab.netns import Host, Link
from whalescale.lab.proc import Proc

__all__ = ["Host", "Lab", "LabError", "Link", "Proc", "lab_available"]
