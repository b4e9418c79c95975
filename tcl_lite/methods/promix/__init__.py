"""ProMix (Xiao et al., IJCAI 2023): its config section, loss terms and selection rules."""
