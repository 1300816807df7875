#pragma once
// One torrent in the writer: its download folder and files (PieceStore), its resume record
// (ResumeBook), the pieces written and waiting for their sync, and the check of its files.
//
// Life: start() right after the TorrentInfo (the record trusted, or a check begun); the
// stage's loop gives a running check slices of its time (check_until); pieces are written
// once the first check is done (open_for_writes); close() or delete_data() at the end.
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "core/metainfo.hpp"
#include "core/sha1.hpp"
#include "core/units.hpp"
#include "writer/batch_writer.hpp"
#include "writer/piece_store.hpp"
#include "writer/resume_state.hpp"
#include "writer/unique_fd.hpp"

namespace pw::writer {

struct TorrentSettings {
    std::string state_dir;  // where the resume records live
    // Pieces are acknowledged only once durable; syncing at most this often batches the
    // fdatasync calls (and the acknowledgements) of the pieces in between.
    std::chrono::milliseconds sync_interval{1000};
    // The record is saved after syncs at most this often (and always at the end).
    std::chrono::milliseconds state_save_interval{3000};
    StoreOptions store;  // with the process's shared open-file budget
};

class TorrentWriter {
public:
    // `torrent` still has its piece hashes: they are copied into a table of their own (20
    // bytes a piece, kept for a VerifyTorrent at any time) and the info dictionary, which
    // holds them and the file list again, is forgotten. `folder` is the download folder,
    // opened below a root.
    TorrentWriter(TorrentId id, Torrent torrent, UniqueFd folder, std::string folder_path,
                  const TorrentSettings& settings, bus::ControlLink& link);
    TorrentWriter(const TorrentWriter&) = delete;
    TorrentWriter& operator=(const TorrentWriter&) = delete;

    // Makes the torrent's empty files and loads the record: when it holds, ResumeState goes
    // out now; otherwise oversized files are cut to length and the check begins.
    void start();

    TorrentId id() const { return id_; }
    const Torrent& torrent() const { return torrent_; }
    // Pieces are written once the first check is done (ResumeState sent).
    bool open_for_writes() const { return started_; }
    bool checking() const { return check_.has_value(); }
    // Hashes pieces of the running check until `deadline` (at least one). When the check is
    // complete: ResumeState + bitfield, and the record saved.
    void check_until(bus::Clock::time_point deadline);
    // VerifyTorrent: every piece on disk hashed again, then ResumeState{checked_all}: the
    // pieces that verified plus those acknowledged since the check began. Pieces keep being
    // written meanwhile. A request during a check runs once that check is done.
    void verify();

    // The files not wanted, by file index (FilesWanted): see PieceStore::set_unwanted. Before
    // start() it only says where the bytes are; later a file wanted again gets its bytes from
    // the parts file at once.
    void set_unwanted(const std::vector<bool>& unwanted);

    void write(const bus::v1::PieceBatch& batch, std::span<const zmq::message_t> frames,
               bus::ArenaReader& arenas);
    // --- reads for peers (ReadService) ---
    // Why `piece` cannot be read for a peer now; empty when it can: the torrent's first check
    // is over and the record says the piece is durable.
    std::string unreadable(PieceIndex piece) const;
    // Reads a durable piece into `out` (its size, see piece_size) and hashes it against the
    // torrent's piece hash. Empty: `out` holds exactly the verified piece. Otherwise why not,
    // and `out` must not be used; a piece whose bytes on disk no longer hash right, or whose
    // file is gone or short, is "changed on disk": logged as an error and no longer done in the
    // record, so it is never read again and is written again when it comes (a verify, i.e.
    // torrent-verify, tells the orchestrator).
    std::string read_verified(PieceIndex piece, std::span<std::uint8_t> out, Sha1Hasher& hasher);
    std::uint32_t piece_size(PieceIndex piece) const { return torrent_.piece_size(piece); }
    // Pieces read back from the files so far.
    std::uint64_t pieces_read() const { return store_.pieces_read(); }

    // Pieces written and waiting for their sync.
    std::size_t pending() const { return pending_.size(); }
    // How long until the pending pieces may be synced (nullopt: none pending). Syncs are at
    // least sync_interval apart; the first one (or the first after a quiet spell) is due at
    // once, and so is the one that completes the torrent: nothing more will come, and the
    // download ends with its acknowledgement.
    std::optional<std::chrono::milliseconds> until_sync_due() const;
    void flush_if_due();

    // The end of this torrent here (TorrentRemoved, the stage's end): stops the check, syncs
    // and acknowledges what is pending, saves the record (unless the first check never
    // finished: then the record on disk stays as it was, and the next start checks again)
    // and closes the files.
    void close();
    // TorrentRemoved with delete_data: stops the check, drops what is pending (nothing is
    // synced or acknowledged: the bytes are going), deletes the torrent's files and the
    // folders its layout implies when empty (PieceStore::delete_files), then its record.
    void delete_data();

private:
    void begin_check(bool verify);
    void finish_check();
    bool already_written(PieceIndex piece) const;
    void add_pending(const PieceRef& piece);
    void mark_pending(PieceIndex piece, bool pending);
    void recount_pending();
    // Syncs the touched files, then acknowledges every pending piece in one PiecesWritten (or
    // reports each as failed when the sync failed: their bytes may be lost).
    void flush();
    void save_record();

    TorrentId id_;
    Torrent torrent_;
    PieceDigests hashes_;
    std::string folder_path_;
    TorrentSettings settings_;
    bus::ControlLink& link_;
    PieceStore store_;
    ResumeBook book_;

    bool started_ = false;  // the first check is done
    std::optional<SlicedCheck> check_;
    bool check_is_verify_ = false;
    bool verify_queued_ = false;
    std::string check_reason_;
    bus::Clock::time_point check_began_{};
    // Pieces acknowledged since the running check began: on disk whatever the check read.
    std::optional<PieceBits> acked_since_check_;

    std::vector<PieceRef> pending_;
    std::vector<bool> pending_pieces_;  // by piece: in pending_
    std::size_t pending_not_done_ = 0;  // pieces in pending_ the book does not hold yet
    std::optional<bus::Clock::time_point> last_sync_;
    bus::Clock::time_point next_save_{};
};

}  // namespace pw::writer
