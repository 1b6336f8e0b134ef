"""The reconcile service: Ticketland's streams → ledger → Vibeapp's topics."""
