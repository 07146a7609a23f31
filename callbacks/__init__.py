"""Lightning integration for lam_captum."""
