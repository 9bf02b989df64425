"""SFTP puller: takes new files from partners' own SFTP servers and lands each one once in the landing prefix.

`files` holds the pure rules (which names are taken, settling, manifests, landed keys), `ledger` the
DynamoDB record of what was taken, `pgp` the decryption of encrypted drops and `puller` the transfer.
"""
