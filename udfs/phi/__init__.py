"""PHI protection: field policies applied with keyed tokens, masks and envelope encryption.

Pure record logic (no Flink, no AWS client): key material arrives through the DataKeySource and
token-key objects built by connectors/kms.py in the operator's open().
"""
