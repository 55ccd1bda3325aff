"""Datasets in DSRL's format: the validated dataset type, IO and sampling."""

from o3srl.data.dataset import KEYS, DatasetError, Episodes, OfflineDataset, safe_frontier, write_dsrl_hdf5

__all__ = ["KEYS", "DatasetError", "Episodes", "OfflineDataset", "safe_frontier", "write_dsrl_hdf5"]
