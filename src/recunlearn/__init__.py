"""recunlearn: recommendation unlearning (UnlearnRec, MMRecUn, CRAGRU), baselines and one evaluation harness."""
import warnings

# Sparse CSR propagation is the core of every graph backbone; torch labels it beta on every call.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

__version__ = "0.1.0"
