"""Judging images: IQA metrics, the learned judge, votes and labels, measurement against truth."""
