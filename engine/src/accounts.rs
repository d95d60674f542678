//! Accounts: the account file, password hashes, recipient lookup.
