from training.management.commands._rounds import RoundDecisionCommand
from training.services.rounds import round_approve


class Command(RoundDecisionCommand):
    help = (
        "Approve the project's round that the promotion gate stopped in needs_review: "
        "after the RM gate the policy stage starts; after the policy gate the new policy "
        "becomes current."
    )
    decide = staticmethod(round_approve)
