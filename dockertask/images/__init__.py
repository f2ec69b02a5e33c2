"""Images: resolving ``container_image`` (templates, references, the default image) and ImageSpec builds."""
