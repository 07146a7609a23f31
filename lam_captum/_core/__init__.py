"""The implementation of :class:`lam_captum.LAM`; import it from :mod:`lam_captum`."""
