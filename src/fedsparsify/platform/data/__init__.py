"""Data sets a site trains on: synthetic brain-age MRI, real NIfTI folders, sklearn digits."""

from fedsparsify.platform.data.sitedata import FederatedData, SiteData, Task

__all__ = ["FederatedData", "SiteData", "Task"]
