"""Benchmarks: pacsnode against DCMTK and Orthanc on the same machine, in the same run."""
