"""Partners' own SFTP servers, locally: an asyncssh server (`server`) and a real OpenSSH sshd (`sshd`).

Both bind 127.0.0.1 only, serve one folder, accept one client key, and are stopped by whoever started
them. `harness` makes their keys and the puller's run-unique configuration.
"""
