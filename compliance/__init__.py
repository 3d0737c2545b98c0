"""The back office: KYC, jurisdictions, freezes, surveillance, audit trail and reports."""
