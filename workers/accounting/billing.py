"""Who pays for a job: the key that created it, its customer, and the Lago
subscription usage is reported to (the key's own mapping wins over its customer's)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.tables import Job
from models.tenancy import ApiKey, Customer
from workers.accounting.post_call import Billing

__all__ = ["billing_for"]


def billing_for(sessions: sessionmaker[Session], job_id: str) -> Billing:
    with sessions() as session:
        row = session.execute(
            select(
                ApiKey.customer_id,
                ApiKey.external_subscription_id,
                Customer.external_subscription_id,
            )
            .select_from(Job)
            .join(ApiKey, ApiKey.id == Job.owner_key)
            .outerjoin(Customer, Customer.id == ApiKey.customer_id)
            .where(Job.id == job_id)
        ).first()
    if row is None:  # the master key, or a key since deleted
        return Billing()
    customer_id, key_subscription, customer_subscription = row
    return Billing(customer_id, key_subscription or customer_subscription)
