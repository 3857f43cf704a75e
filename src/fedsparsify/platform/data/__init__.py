"""Data sets a site trains on: synthetic brain-age MRI, real NIfTI folders, sklearn digits.

- :mod:`.brainage`: synthetic T1 brain-age volumes from the MNI152 template nilearn ships,
  with per-site scanners and age distributions (:func:`make_brainage_federation`).
- :mod:`.nifti`: a folder of NIfTI volumes plus a BIDS-style ``participants.tsv``.
- :mod:`.digits` and :mod:`.partition`: scikit-learn's digits, IID / Dirichlet / size-skewed.
- :mod:`.synthetic`: a generated classification task with Dirichlet label skew, each site made
  on demand, for simulated federations of a thousand sites and more.
- :mod:`.sitefolder`: one site's data on disk, the entry point of a client process.

Volumes are z-scored per volume and shaped ``(N, 1, D, H, W)``; see :mod:`.preprocess`.
"""

from fedsparsify.platform.data.brainage import (
    COARSE_SHAPE,
    DEFAULT_SHAPE,
    AgeDistribution,
    SiteProfile,
    default_site_profiles,
    generate_subject,
    make_brainage_federation,
)
from fedsparsify.platform.data.digits import load_digits_arrays, make_digits_federation
from fedsparsify.platform.data.nifti import (
    Participant,
    load_nifti_federation,
    load_nifti_site,
    read_participants,
)
from fedsparsify.platform.data.partition import (
    dirichlet_partition,
    iid_partition,
    partition_indices,
    size_skew_partition,
    skewed_sizes,
)
from fedsparsify.platform.data.sitedata import FederatedData, SiteData, Task
from fedsparsify.platform.data.sitefolder import load_site, save_site
from fedsparsify.platform.data.synthetic import SyntheticClassification

__all__ = [
    "COARSE_SHAPE",
    "DEFAULT_SHAPE",
    "AgeDistribution",
    "FederatedData",
    "Participant",
    "SiteData",
    "SiteProfile",
    "SyntheticClassification",
    "Task",
    "default_site_profiles",
    "dirichlet_partition",
    "generate_subject",
    "iid_partition",
    "load_digits_arrays",
    "load_nifti_federation",
    "load_nifti_site",
    "load_site",
    "make_brainage_federation",
    "make_digits_federation",
    "partition_indices",
    "read_participants",
    "save_site",
    "size_skew_partition",
    "skewed_sizes",
]
