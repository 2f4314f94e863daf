"""recunlearn: recommendation unlearning (UnlearnRec, MMRecUn, CRAGRU), baselines and one evaluation harness."""
import warnings

# Sparse CSR propagation is the core of every graph backbone; torch labels it beta on every call.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
# Interaction index arrays are read-only by design; torch only ever reads the tensors made from them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

__version__ = "0.1.0"
