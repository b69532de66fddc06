"""The MRD streaming server (Gadgetron's port 9002 protocol) over the shared engine."""
