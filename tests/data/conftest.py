import pytest

from longforge.data.corpus import prose_documents, split_documents
from longforge.data.tokenizer import tokenizer_training_texts, train_tokenizer


@pytest.fixture(scope="session")
def stdlib_docs():
    return prose_documents(("stdlib",))


@pytest.fixture(scope="session")
def small_docs(stdlib_docs):
    """A fixed slice of the stdlib corpus (every 5th document), enough for a tokenizer and a stream."""
    return stdlib_docs[::5]


@pytest.fixture(scope="session")
def tokenizer(small_docs):
    train, _ = split_documents(small_docs)
    return train_tokenizer(tokenizer_training_texts(train, seed=0, num_skill_samples=300), vocab_size=3000)
