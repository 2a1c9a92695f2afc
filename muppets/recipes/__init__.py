"""Recipes: one module (or package) per job, each composing the engine (training/) and the layers
below it. A recipe never imports another recipe; what two recipes share lives in a lower layer."""
