"""Datasets in DSRL's format: the validated dataset type, IO, sampling and the method's pure transforms."""

from o3srl.data.dataset import KEYS, DatasetError, Episodes, OfflineDataset, safe_frontier, write_dsrl_hdf5

__all__ = ["KEYS", "DatasetError", "Episodes", "OfflineDataset", "safe_frontier", "write_dsrl_hdf5"]
