"""What the mirror app tells the rest of the portal, without knowing who listens."""

from django.dispatch import Signal

# Sent after a package became a mirror's current one for its target (the transaction is
# committed and the tree swapped). Arguments: mirror, package. fleet rolls it out to rings.
package_published = Signal()
