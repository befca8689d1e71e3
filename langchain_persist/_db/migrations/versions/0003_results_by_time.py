"""results by time: an index for listing every agent's runs newest first

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("agent_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_results_created_at_id"), ["created_at", "id"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("agent_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_results_created_at_id"))
