"""The deployment: Lambda artifacts (``infra.build``) and the Pulumi program (``__main__``)."""
