"""Backends run workloads: `local` on this host, later `slurm`. Nothing outside a backend's
package knows which one runs; everything goes through the protocol in `base`."""
