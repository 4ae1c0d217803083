"""What every output does to flows before it shows them: filters (internal
networks, first appearances), the :class:`~.view.View` of a run, pod names
from Kubernetes, and traffic budgets for tests."""
