"""The columns of ``master_index.csv``, declared once.

The CSV writer (:mod:`tasks.index`), the input layouts (:mod:`tasks.layouts`) and the
Croissant fields (:mod:`tasks.croissant`) are all generated from :data:`INDEX_SCHEMA`. The
first nine columns are the seed's, in its order; the rest are extras that a layout fills
when its inputs have them (empty otherwise). Positions are 0-based pixels (``x`` column,
``y`` row, pixel centres on integers); fluxes are DN/s; magnitudes AB unless stated.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CANDIDATE_COLUMNS", "INDEX_SCHEMA", "Column"]


@dataclass(frozen=True)
class Column:
    """One column of ``master_index.csv`` and its Croissant field.

    ``dtype`` is the pandas dtype; ``data_type`` the Croissant type (``sc:Integer``,
    ``sc:Float``, ``sc:Text``, ``sc:Boolean``); ``field`` the Croissant field name when it
    differs from the column name.
    """

    name: str
    dtype: str
    data_type: str
    description: str
    field: str | None = None

    @property
    def field_name(self) -> str:
        return self.field or self.name


def _c(name: str, dtype: str, description: str, field: str | None = None) -> Column:
    data_type = {"Int64": "sc:Integer", "int64": "sc:Integer", "float64": "sc:Float",
                 "string": "sc:Text", "boolean": "sc:Boolean"}[dtype]
    return Column(name, dtype, data_type, description, field)


#: Columns of master_index.csv, in order.
INDEX_SCHEMA: tuple[Column, ...] = (
    # the seed's nine
    _c("cutout_id", "int64", "Unique cutout identifier, 0 .. N-1 over the dataset."),
    _c("job_id", "string", "RAPID job folder the candidate comes from (jid...)."),
    _c("x", "float64", "Candidate column position in the job's images, 0-based pixels "
       "(RAPID layout: PSF-fit x_fit)."),
    _c("y", "float64", "Candidate row position in the job's images, 0-based pixels "
       "(RAPID layout: PSF-fit y_fit)."),
    _c("label", "Int64", "1 real, 0 bogus; empty when the job has no truth (unlabelled)."),
    _c("cutout_filename", "string",
       "Path of the .npy holding the cutout, relative to the dataset root: files layout, the "
       "(64, 64, 4) float32 cutout itself; shards layout, its job's (N, 64, 64, 4) shard, the "
       "cutout being row `row`. Channels science, reference, difference, score, each "
       "ZScale-normalised to [0, 1].",
       field="cutout_path"),
    _c("flux", "float64", "Candidate flux, DN/s (seed: catalog flux; RAPID: PSF-fit flux_fit)."),
    _c("fwhm", "float64", "Catalog FWHM of the candidate, pixels, when the catalog has it."),
    _c("elongation", "float64", "Catalog elongation (major/minor axis), when the catalog has it."),
    # sharded layout
    _c("shard", "string", "Shards layout: path of the job's (N, 64, 64, 4) float32 .npy shard "
       "(shards/<job_id>.npy); empty in the files layout."),
    _c("row", "Int64", "Shards layout: 0-based row of the cutout in its shard; empty in the "
       "files layout."),
    # provenance
    _c("catalog_row", "int64", "0-based data row of the candidate in its job's catalog."),
    _c("flags", "Int64", "Catalog flags of the candidate (RAPID: PSF-fit flags), when present."),
    _c("filter", "string", "Filter of the job's science image (e.g. H158, R062)."),
    _c("field", "string", "Sky field (tile) of the job, from the field lists or the FIELD card."),
    _c("mjd", "float64", "Modified Julian Date of the science exposure (MJD-OBS), days."),
    _c("reference_file", "string", "Reference image used: the gain-matched one when present."),
    # labels
    _c("labelled", "boolean", "True when the job had truth files, so label is meaningful."),
    _c("match_id", "string", "Matched truth source: <row>_inj (injected) or <object_id>_ou."),
    _c("truth_id", "string", "Row of the injection list or object_id of the simulation truth."),
    _c("injected", "boolean", "True when the matched truth source is an injected fake."),
    _c("match_distance", "float64", "Distance to the matched truth source, pixels."),
    _c("truth_mag", "float64", "AB magnitude of the matched truth source."),
    # RAPID finder (photutils DAOStarFinder on D)
    _c("xcentroid", "float64", "Finder centroid column, 0-based pixels (photutils 3: "
       "x_centroid); empty when the job has no finder catalog."),
    _c("ycentroid", "float64", "Finder centroid row, 0-based pixels (photutils 3: y_centroid)."),
    _c("sharpness", "float64", "DAOStarFinder sharpness."),
    _c("roundness1", "float64", "DAOStarFinder roundness from symmetry."),
    _c("roundness2", "float64", "DAOStarFinder roundness from marginal Gaussian fits."),
    _c("npix", "Int64", "Pixels in the finder's footprint (photutils 3: n_pixels)."),
    _c("peak", "float64", "Peak pixel value of D at the source, DN/s."),
    _c("finder_flux", "float64", "Finder flux (DAOStarFinder flux column), DN/s."),
    _c("mag", "float64", "Finder instrumental magnitude, -2.5 log10(flux) (NaN for flux <= 0)."),
    _c("daofind_mag", "float64", "DAOStarFinder magnitude relative to the detection threshold."),
    # RAPID PSF photometry (photutils PSFPhotometry seeded by the finder)
    _c("flux_fit", "float64", "PSF-fit flux, DN/s."),
    _c("flux_err", "float64", "Uncertainty of flux_fit, DN/s."),
    _c("x_err", "float64", "Uncertainty of x_fit, pixels."),
    _c("y_err", "float64", "Uncertainty of y_fit, pixels."),
    _c("qfit", "float64", "PSF-fit quality: sum of absolute residuals over flux."),
    _c("cfit", "float64", "PSF-fit central pixel residual over flux."),
    _c("local_bkg", "float64", "Local background subtracted by the PSF fit, DN/s."),
    _c("npixfit", "Int64", "Pixels used in the PSF fit (photutils 3: n_pixels_fit)."),
    _c("reduced_chi2", "float64", "Reduced chi-squared of the PSF fit (photutils 2.3 and "
       "later); empty for catalogs without it."),
    _c("ra", "float64", "Right ascension of the PSF-fit position, degrees (ICRS)."),
    _c("dec", "float64", "Declination of the PSF-fit position, degrees (ICRS)."),
    # evaluation
    _c("score_peak", "float64", "Peak of the score image (Scorr, S/N units) over the 3 x 3 "
       "pixels centred on the candidate pixel; NaN when all nine are non-finite."),
    _c("bogus_kind", "string", "Cause of a bogus candidate where the simulator records it "
       "(saturated_star, star_residual, galaxy_residual, cosmic_ray, hot_pixel, mask_edge, "
       "noise; unmatched_real where the simulator matched a real source that our labels did not); "
       "empty for real candidates and for jobs without such a record."),
    _c("split", "string", "train, validation or test: assigned by sky field (by job when the "
       "jobs carry no field), never by cutout; a truth source never straddles two splits. "
       "See the `splits` record set."),
    # integrity
    _c("sha256", "string", "Lowercase hex SHA-256 of the cutout's 65,536 data bytes: the "
       "(64, 64, 4) float32 tensor, little-endian, C order (files layout: the .npy file without "
       "its header; shards layout: row `row` of the shard). Computed when the cutout is written; "
       "`cutouts verify` checks every cutout against it."),
)

#: What a layout returns per catalog row: every index column but the ones the cutout and
#: index steps add.
_ADDED_BY_INDEX = (
    "cutout_id", "job_id", "cutout_filename", "shard", "row", "score_peak", "split", "sha256"
)
CANDIDATE_COLUMNS: dict[str, str] = {
    c.name: c.dtype for c in INDEX_SCHEMA if c.name not in _ADDED_BY_INDEX
}
